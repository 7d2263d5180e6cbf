"""Read models built from the log: migrations, the projector, the archive, rebuild, restore."""
