"""One evaluation: the suite file and a scenario's instances through an adapter and a model."""
