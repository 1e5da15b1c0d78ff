"""Test lab: boot tiny real guests on a tap to prove packets flow (end-to-end tests, demo)."""
