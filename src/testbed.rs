//! Network namespaces (`lt-*`) with veth pairs and bridges for `make run`, benchmarks and tests.
//! Everything created is removed on drop; nothing it did not create is touched.
