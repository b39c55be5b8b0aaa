"""Write-back: the dirty set (pure), the journal (durability) and the flusher (I/O)."""
