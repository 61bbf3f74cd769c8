"""Channel coupling: which output channels must be pruned together, and the unit space of a channel-level search."""
