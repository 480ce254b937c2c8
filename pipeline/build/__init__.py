"""Steps 2-4, building: fetch verified inputs, unpack them safely, stage the tree, make the
image, and record its metadata."""
