"""Draws the book's figures (docs/figures/) from the engine itself. See docs/writing.md."""
