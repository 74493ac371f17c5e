# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Walks an Avro body as fastavro's full read does, building nothing: the check behind a projected decode.

``walk(program, data, position)`` returns the offset after the record, or raises what fastavro's
``schemaless_reader`` (fastavro 1.13) raises on the same bytes: ``EOFError`` where it does (a
value cut short, a negative length), ``ValueError`` for its other failures (a varint cut inside, a
union or enum index out of range, UTF-8 that does not decode). Its quirks are kept: a negative union or enum index counts from
the end, a boolean is any byte, a varint is as long as it goes on, a negative block's byte size is
read and ignored. ``program`` comes from :func:`schemas.avro_program.compile_schema`.
"""

from cpython.unicode cimport PyUnicode_DecodeUTF8

ctypedef unsigned long long u64
ctypedef long long i64

from schemas._avro_ops cimport *  # the op numbers of schemas.avro_program


cdef inline i64 _long(const unsigned char[:] data, Py_ssize_t* at, Py_ssize_t end) except? -1:
    cdef u64 b
    cdef u64 n
    cdef int shift
    if at[0] >= end:
        raise EOFError("a value ends early")
    b = data[at[0]]
    at[0] += 1
    n = b & 0x7F
    shift = 7
    while (b & 0x80) != 0:
        if at[0] >= end:
            raise ValueError("a varint ends early")
        b = data[at[0]]
        at[0] += 1
        n |= (b & 0x7F) << (shift & 63)  # x86-64's shift, as fastavro's compiled read_long does
        shift += 7
    return <i64>((n >> 1) ^ (-(n & 1)))


cdef inline void _take(Py_ssize_t* at, Py_ssize_t end, i64 size) except *:
    if size < 0 or size > end - at[0]:
        raise EOFError("a length beyond the data")
    at[0] += size


cdef void _walk(tuple node, const unsigned char[:] data, Py_ssize_t* at, Py_ssize_t end) except *:
    cdef int op = node[0]
    cdef i64 size, count, index, i, branches
    cdef tuple child, fields
    cdef Py_ssize_t start
    if op == OP_NULL:
        return
    if op == OP_LONG or op == OP_INT:
        _long(data, at, end)
    elif op == OP_STRING:
        size = _long(data, at, end)
        start = at[0]
        _take(at, end, size)
        PyUnicode_DecodeUTF8(<const char*>&data[start], size, "strict")
    elif op == OP_BYTES:
        _take(at, end, _long(data, at, end))
    elif op == OP_BOOLEAN:
        if at[0] >= end:
            raise EOFError("a boolean ends early")
        at[0] += 1
    elif op == OP_DOUBLE or op == OP_FLOAT:
        size = 8 if op == OP_DOUBLE else 4
        if end - at[0] < size:
            raise EOFError("a number ends early")
        at[0] += size
    elif op == OP_FIXED:
        _take(at, end, node[1])
    elif op == OP_ENUM:
        index = _long(data, at, end)
        count = node[1]
        if index < -count or index >= count:
            raise ValueError("an enum index out of range")
    elif op == OP_UNION:
        index = _long(data, at, end)
        fields = node[1]
        branches = len(fields)
        if index < -branches or index >= branches:
            raise ValueError("a union index out of range")
        _walk(fields[index + branches if index < 0 else index], data, at, end)
    elif op == OP_RECORD:
        for child in node[1]:
            _walk(child, data, at, end)
    elif op == OP_ARRAY or op == OP_MAP:
        child = node[1]
        count = _long(data, at, end)
        while count != 0:
            if count < 0:
                count = -count
                _long(data, at, end)  # the block's byte size: read and ignored, as the full read does
            i = 0
            while i < count:
                if op == OP_MAP:
                    size = _long(data, at, end)
                    start = at[0]
                    _take(at, end, size)
                    PyUnicode_DecodeUTF8(<const char*>&data[start], size, "strict")
                _walk(child, data, at, end)
                i += 1
            count = _long(data, at, end)
    else:
        raise ValueError(f"unknown walk op {op}")


def walk(tuple program, const unsigned char[:] data, Py_ssize_t position):
    """The offset after the value ``program`` describes, read from ``data`` at ``position``."""
    cdef Py_ssize_t at = position
    _walk(program, data, &at, data.shape[0])
    return at
