# Source before building holt-bench with the `rocksdb` feature: links
# Debian's librocksdb (apt-get install librocksdb-dev libclang-dev) instead
# of compiling RocksDB from source, and generates the bindings from the
# installed headers so they match the library.
export ROCKSDB_LIB_DIR=/usr/lib/x86_64-linux-gnu
export ROCKSDB_INCLUDE_DIR=/usr/include
unset ROCKSDB_STATIC ROCKSDB_COMPILE
