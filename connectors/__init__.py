"""Sources to Arrow to workspace: one module per source kind behind one small protocol."""
