"""One module per CLI verb, each reading setup → fit → save top to bottom."""
