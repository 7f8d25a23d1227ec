"""The marketplace from the client's side: the HTTP client, image upload, resolving references."""
