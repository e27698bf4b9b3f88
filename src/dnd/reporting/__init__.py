"""Report building blocks: number formatting, tables and figures."""
