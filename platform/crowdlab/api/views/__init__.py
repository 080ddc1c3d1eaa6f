"""The API's views, one module per resource: projects (and members), items
(and imports), labelling, runs (and results), export, auth."""
