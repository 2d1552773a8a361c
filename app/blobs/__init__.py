"""Object storage for the archive: one `BlobStore` Protocol (base.py), an adapter per backend
(s3.py, local.py), the factory that picks one from Settings (stores.py), and the signed
download route of a file:// archive (endpoints.py)."""
