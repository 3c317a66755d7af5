"""Vector databases behind one interface (``base.VectorDBDriver``): ``faiss``,
``chroma``, ``milvus``, ``weaviate``; datasets and ground truth in ``dataset``."""
