"""IBM LSF with jsrun: ranks from the JSM_NAMESPACE_* variables, hosts from the job's rank file."""

from __future__ import annotations

import os

from trellis.errors import ConfigurationError
from trellis.plugin import ClusterEnvironment
from trellis_clusters._variables import all_set, check_layout, port_from_job_id, read_int

_LAUNCHER = "LSF (jsrun)"


class LSFEnvironment(ClusterEnvironment):
    """LSB_DJOB_RANKFILE lists one host per rank; its first line is the launch node, which runs no rank."""

    name = "lsf"
    auto_priority = 20

    @classmethod
    def detect(cls) -> bool:
        return all_set("LSB_JOBID", "LSB_DJOB_RANKFILE", "JSM_NAMESPACE_LOCAL_RANK", "JSM_NAMESPACE_SIZE")

    def _compute_hosts(self) -> list[str]:
        """Distinct compute hosts in rank order."""
        path = os.environ["LSB_DJOB_RANKFILE"]
        try:
            with open(path) as file:
                lines = [line.strip() for line in file if line.strip()]
        except OSError as error:
            raise ConfigurationError(f"cannot read the LSF rank file LSB_DJOB_RANKFILE={path!r}: {error}") from None
        if len(lines) < 2:
            raise ConfigurationError(f"the LSF rank file {path!r} lists no compute host (only {lines})")
        return list(dict.fromkeys(lines[1:]))

    @property
    def main_address(self) -> str:
        return os.environ.get("MASTER_ADDR") or self._compute_hosts()[0]

    @property
    def main_port(self) -> int:
        if "MASTER_PORT" in os.environ:
            return read_int("MASTER_PORT", "the user")
        return port_from_job_id(os.environ["LSB_JOBID"])

    def world_size(self) -> int:
        return read_int("JSM_NAMESPACE_SIZE", _LAUNCHER)

    def global_rank(self) -> int:
        return read_int("JSM_NAMESPACE_RANK", _LAUNCHER)

    def local_rank(self) -> int:
        return read_int("JSM_NAMESPACE_LOCAL_RANK", _LAUNCHER)

    def node_rank(self) -> int:
        hosts = self._compute_hosts()
        hostname = os.environ.get("LSB_HOSTS_THIS", "") or os.uname().nodename
        if hostname not in hosts:
            raise ConfigurationError(f"this host {hostname!r} is not among the LSF compute hosts {hosts}")
        return hosts.index(hostname)

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        check_layout(_LAUNCHER, self.world_size(), None, num_devices, num_nodes)
