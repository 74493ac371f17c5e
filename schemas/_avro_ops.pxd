# The op numbers of schemas.avro_program, shared by the native walker and writer.
cdef enum Op:
    OP_NULL = 0
    OP_BOOLEAN = 1
    OP_LONG = 2
    OP_FLOAT = 3
    OP_DOUBLE = 4
    OP_BYTES = 5
    OP_STRING = 6
    OP_FIXED = 7
    OP_ENUM = 8
    OP_ARRAY = 9
    OP_MAP = 10
    OP_UNION = 11
    OP_RECORD = 12
    OP_INT = 13
