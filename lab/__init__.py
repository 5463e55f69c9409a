"""The offline lab: emulators (Proxmox VE, Cloudflare, upstream, edge) and the network they run on."""
