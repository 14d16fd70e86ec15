"""Many generations at once (docs/ARCHITECTURE.md §9): `python -m backend batch` runs prompts x seeds
as Ray tasks (batch.py) and lays their previews out on a contact sheet (contact_sheet.py).
"""
