"""The command line: parse, call the manager, print. No logic of its own."""
