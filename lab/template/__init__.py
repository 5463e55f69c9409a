"""Debian 12 container template, built once like Proxmox's `debian-12-standard` and cached."""
