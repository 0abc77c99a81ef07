"""What training, export and serving must agree on, torch-free and owned by none of them: how an image file
becomes the RGB image a model sees (`contract.images`), and how a file is named by its content
(`contract.files`)."""
