"""What the user writes: matrices and their sections, layouts, the cases a matrix expands to, and reading user files."""
