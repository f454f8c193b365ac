"""HTTP routes, thin: parse, check, call the Ranker, shape the response."""
