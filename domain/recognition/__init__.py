"""Recognition (认定类): batches of firms identified from data, verified as a list."""
