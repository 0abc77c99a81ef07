"""What training, export and serving must agree on, torch-free and owned by none of them: how an image file
becomes the RGB image a model sees (`contract.images`), how a file is named by its content
(`contract.files`), and a free loopback port (`contract.ports`)."""
