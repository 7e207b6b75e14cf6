"""Text processing with no model stack: normalisation and near-duplicate search."""
