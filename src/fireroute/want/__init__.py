"""What the host should hold: typed, keyed, owner-tagged objects rendered from the leases (pure)."""
