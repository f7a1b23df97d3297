"""services layer of dbquota (see STYLE.md for the layering)."""
