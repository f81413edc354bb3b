"""jiapei_cli."""
