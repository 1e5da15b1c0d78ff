"""Pure renders of what a VM needs: guest config, Firecracker inputs, machine output."""
