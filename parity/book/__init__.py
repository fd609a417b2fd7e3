"""check-book: a reader's own code from the book, name by name, against the NumPy reference."""
