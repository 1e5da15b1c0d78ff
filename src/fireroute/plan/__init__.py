"""Plans: ordered steps, each with its inverse, printable as the commands a person would type."""
