"""Small shared helpers (logging, atomic writes, seeding)."""
