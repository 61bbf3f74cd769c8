"""Selection: scores -> a binary mask (exact top-k budgets, collapsing channel masks)."""
