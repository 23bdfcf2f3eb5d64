"""Reference data: the data-file format and the loader that publishes it to the feeds."""
