"""The distribution around a scaffolded plugin: pyproject.toml, README.md and .gitignore."""

PYPROJECT = '''[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "${distribution}"
version = "0.1.0"
description = "Trellis ${role_words} plugin: ${name}."
readme = "README.md"
requires-python = ">=3.10"
# The trellis releases providing the plugin API this was built for (TRELLIS_PLUGIN_API in the package).
dependencies = ["${trellis_requirement}"]

[project.optional-dependencies]
test = ["pytest>=8"]

# The kernel finds the plugin here, by name, without importing it until it is chosen.
[project.entry-points."${group}"]
${entry_name} = "${package}:${cls}"

[tool.setuptools]
packages = ["${package}"]

[tool.pytest.ini_options]
testpaths = ["tests"]
# The conformance kit shipped with trellis checks the plugin against its role's contract.
addopts = "-p trellis.testing"
trellis_plugins = ["${role}:${name}"]
'''

README = '''# ${distribution}

A Trellis ${role_words} plugin, `${name}`. Install it and choose it by name:

```bash
pip install -e .
```

```python
${usage}
```

## Develop

`${package}/__init__.py` holds the plugin; every `TODO` marks a place for the real backend calls.
Import backend libraries inside the methods that use them, never at module level: the kernel imports
this module to list and auto-detect plugins, and a plugin that was installed but not chosen must cost
nothing. The plugin contract for each role is in Trellis's docs/plugins.md.

## Test

```bash
pip install -e ".[test]"
pytest
```

`pytest` runs the tests in `tests/` and the Trellis conformance kit (`-p trellis.testing`, configured in
pyproject.toml) against `${role}:${name}`: the entry point, a cheap import, the descriptor, the role's
behaviour, a real training run and an exact resume. A failing check says what to fix.

## Publish

```bash
python -m build && python -m twine upload dist/*
```

Users then `pip install ${distribution}`; `trellis plugins` lists `${name}` under ${role_words}.
'''

GITIGNORE = '''__pycache__/
*.egg-info/
build/
dist/
.pytest_cache/
.venv/
# what a Trainer writes when you try the plugin from this folder
lightning_logs/
*.ckpt
'''

USAGE = {
    "accelerator": 'trainer = trellis.Trainer(accelerator="${name}", devices=1)',
    "strategy": 'trainer = trellis.Trainer(strategy="${name}")',
    "precision": 'trainer = trellis.Trainer(precision="${name}")',
    "logger": 'trainer = trellis.Trainer(logger="${name}")',
    "checkpoint_io": "from ${package} import ${cls}\n\ntrainer = trellis.Trainer(plugins=[${cls}()])",
    "cluster_environment": "# detected automatically in jobs that ${cls}.detect() recognises",
    "callback": 'trainer = trellis.Trainer(callbacks=["${name}"])',
}
