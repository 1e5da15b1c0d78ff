"""The desired host state as a value (pure): what the leases want on the host, per VM and
shared, derived from the leases alone, with no kernel read and no state file."""
