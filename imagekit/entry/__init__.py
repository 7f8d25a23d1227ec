"""The metadata entry: the typed model, its RDF/XML form, safe parsing, drafts from images."""
