"""Small helpers shared by the kernel and plugins."""
