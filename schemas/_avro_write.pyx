# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Writes an Avro body natively, byte for byte as fastavro's ``schemaless_writer`` (``strict_allow_default``) would.

``write(program, record)`` returns the body, or None when it cannot vouch for fastavro's answer: a
value of any type but the exact builtins (``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``,
``list``, ``dict``), a union whose choice fastavro makes by more than its first valid branch (a
record or ``float`` branch), a value fastavro would coerce (an ``int`` for a ``double``), a missing
field without a default, an extra field, a string that is not valid UTF-8, an ``int`` beyond 64 bits.
The caller then asks fastavro, which writes the same record or refuses it. ``program`` comes from
:func:`schemas.avro_program.compile_schema`.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.string cimport memcpy

ctypedef unsigned long long u64
ctypedef long long i64
ctypedef unsigned int u32

from schemas._avro_ops cimport *  # the op numbers of schemas.avro_program

cdef enum:
    DONE = 0       # written
    FALLBACK = 1   # not vouched for: fastavro decides
    MATCH = 2      # fastavro's validate would accept the value for this schema
    NO_MATCH = 3   # it would refuse it
    UNSURE = 4     # it might do either
    MAX_DEPTH = 64

cdef object _MISSING = object()
cdef i64 INT_MIN = -2147483648
cdef i64 INT_MAX = 2147483647


cdef struct Buffer:
    char* data
    Py_ssize_t size
    Py_ssize_t capacity


cdef int _reserve(Buffer* out, Py_ssize_t more) except -1:
    cdef Py_ssize_t capacity = out.capacity
    cdef char* grown
    if out.size + more <= capacity:
        return 0
    while capacity < out.size + more:
        capacity *= 2
    grown = <char*>PyMem_Realloc(out.data, capacity)
    if grown == NULL:
        raise MemoryError()
    out.data = grown
    out.capacity = capacity
    return 0


cdef inline int _put(Buffer* out, const char* data, Py_ssize_t size) except -1:
    _reserve(out, size)
    memcpy(out.data + out.size, data, size)
    out.size += size
    return 0


cdef inline int _put_long(Buffer* out, i64 value) except -1:
    cdef u64 n = ((<u64>value) << 1) ^ (<u64>(value >> 63))
    _reserve(out, 10)
    while (n & ~(<u64>0x7F)) != 0:
        out.data[out.size] = <char>((n & 0x7F) | 0x80)
        out.size += 1
        n >>= 7
    out.data[out.size] = <char>n
    out.size += 1
    return 0


cdef inline int _put_little_endian(Buffer* out, u64 bits, int size) except -1:
    """The low ``size`` bytes of ``bits``, least significant first (an IEEE float's bytes in Avro)."""
    cdef char raw[8]
    cdef int index
    for index in range(size):
        raw[index] = <char>((bits >> (8 * index)) & 0xFF)
    return _put(out, raw, size)


cdef inline bint _known(object value):
    """``value`` is of a type whose validity fastavro judges by ``isinstance`` alone, as here."""
    cdef type kind = type(value)
    return (
        value is None or kind is bool or kind is int or kind is float or kind is str or kind is bytes
        or kind is list or kind is dict
    )


cdef int _check(tuple node, object value, int depth) except -1:
    """What fastavro's ``_validate`` (``raise_errors=False``) says of ``value``: MATCH, NO_MATCH or UNSURE."""
    cdef int op = node[0]
    cdef int verdict, overflow
    cdef i64 number
    cdef type kind
    if depth > MAX_DEPTH or not _known(value):
        return UNSURE
    kind = type(value)
    if op == OP_NULL:
        return MATCH if value is None else NO_MATCH
    if op == OP_BOOLEAN:
        return MATCH if kind is bool else NO_MATCH
    if op == OP_LONG or op == OP_INT:
        if kind is not int:
            return NO_MATCH
        number = PyLong_AsLongLongAndOverflow(value, &overflow)
        if overflow != 0 or (op == OP_INT and (number < INT_MIN or number > INT_MAX)):
            return NO_MATCH
        return MATCH
    if op == OP_FLOAT or op == OP_DOUBLE:
        return MATCH if kind is float or kind is int else NO_MATCH
    if op == OP_STRING:
        return MATCH if kind is str else NO_MATCH
    if op == OP_BYTES:
        return MATCH if kind is bytes else NO_MATCH
    if op == OP_FIXED:
        return MATCH if kind is bytes and len(<bytes>value) == <Py_ssize_t>node[1] else NO_MATCH
    if op == OP_ENUM:
        return MATCH if kind is str and value in <dict>node[2] else NO_MATCH
    if op == OP_ARRAY:
        if kind is bytes:
            return UNSURE  # a Sequence to fastavro: its items would be judged
        if kind is not list:
            return NO_MATCH
        for item in <list>value:
            verdict = _check(node[1], item, depth + 1)
            if verdict != MATCH:
                return verdict
        return MATCH
    if op == OP_MAP:
        if kind is not dict:
            return NO_MATCH
        for key in <dict>value:
            if type(key) is not str:
                return UNSURE if isinstance(key, str) else NO_MATCH
        for item in (<dict>value).values():
            verdict = _check(node[1], item, depth + 1)
            if verdict != MATCH:
                return verdict
        return MATCH
    if op == OP_UNION:
        for branch in <tuple>node[1]:
            verdict = _check(branch, value, depth + 1)
            if verdict != NO_MATCH:
                return verdict
        return NO_MATCH
    return UNSURE  # a record: fastavro also weighs "-type" and defaults


cdef int _write(tuple node, object value, Buffer* out, int depth) except -1:
    cdef int op = node[0]
    cdef type kind = type(value)
    cdef Py_ssize_t size, index, count, found
    cdef const char* text
    cdef double number
    cdef float single
    cdef u64 bits
    cdef u32 bits32
    cdef int verdict
    cdef tuple children, names, defaults
    cdef dict record
    if depth > MAX_DEPTH:
        return FALLBACK
    if op == OP_NULL:
        return DONE  # fastavro writes nothing, whatever the value
    if op == OP_LONG or op == OP_INT:
        if kind is not int:
            return FALLBACK
        _put_long(out, <i64>value)  # OverflowError beyond 64 bits: fastavro's error then
    elif op == OP_STRING:
        if kind is not str:
            return FALLBACK
        text = PyUnicode_AsUTF8AndSize(value, &size)  # raises on a lone surrogate, as str.encode does
        _put_long(out, size)
        _put(out, text, size)
    elif op == OP_BOOLEAN:
        if kind is not bool:
            return FALLBACK
        _put(out, b"\x01" if value else b"\x00", 1)
    elif op == OP_DOUBLE:
        if kind is not float:
            return FALLBACK
        number = value
        memcpy(&bits, &number, 8)
        _put_little_endian(out, bits, 8)
    elif op == OP_FLOAT:
        if kind is not float:
            return FALLBACK
        single = <float>(<double>value)
        memcpy(&bits32, &single, 4)
        _put_little_endian(out, bits32, 4)
    elif op == OP_BYTES:
        if kind is not bytes:
            return FALLBACK
        size = len(<bytes>value)
        _put_long(out, size)
        _put(out, <const char*>(<bytes>value), size)
    elif op == OP_FIXED:
        if kind is not bytes or len(<bytes>value) != <Py_ssize_t>node[1]:
            return FALLBACK
        _put(out, <const char*>(<bytes>value), len(<bytes>value))
    elif op == OP_ENUM:
        if kind is not str:
            return FALLBACK
        found_index = (<dict>node[2]).get(value)
        if found_index is None:
            return FALLBACK
        _put_long(out, <i64>found_index)
    elif op == OP_ARRAY:
        if kind is not list:
            return FALLBACK
        count = len(<list>value)
        if count > 0:
            _put_long(out, count)
            for item in <list>value:
                if _write(node[1], item, out, depth + 1) != DONE:
                    return FALLBACK
        _put_long(out, 0)
    elif op == OP_MAP:
        if kind is not dict:
            return FALLBACK
        count = len(<dict>value)
        if count > 0:
            _put_long(out, count)
            for key, item in (<dict>value).items():
                if type(key) is not str:
                    return FALLBACK
                text = PyUnicode_AsUTF8AndSize(key, &size)
                _put_long(out, size)
                _put(out, text, size)
                if _write(node[1], item, out, depth + 1) != DONE:
                    return FALLBACK
        _put_long(out, 0)
    elif op == OP_UNION:
        if not _known(value):
            return FALLBACK  # a tuple names its branch; other types validate by rules not kept here
        index = 0
        for branch in <tuple>node[1]:
            verdict = _check(branch, value, depth + 1)
            if verdict == MATCH:
                if (<tuple>branch)[0] == OP_FLOAT:
                    return FALLBACK  # fastavro looks further for a double
                _put_long(out, index)
                return _write(branch, value, out, depth + 1)
            if verdict == UNSURE:
                return FALLBACK
            index += 1
        return FALLBACK  # no branch: fastavro refuses the value
    elif op == OP_RECORD:
        if kind is not dict:
            return FALLBACK
        record = <dict>value
        children = tuple(node[1])
        names = tuple(node[2])
        defaults = tuple(node[3])
        found = 0
        for index in range(len(children)):
            item = record.get(names[index], _MISSING)
            if item is _MISSING:
                if defaults[index] is None:
                    return FALLBACK  # fastavro refuses a missing field without a default
                item = (<tuple>defaults[index])[0]
            else:
                found += 1
            if _write(children[index], item, out, depth + 1) != DONE:
                return FALLBACK
        if found != len(record):
            return FALLBACK  # fields the schema lacks: fastavro refuses them
    else:
        return FALLBACK
    return DONE


def write(tuple program, object record):
    """The Avro body of ``record`` under ``program``, or None when fastavro must decide."""
    cdef Buffer out
    cdef int outcome
    out.size = 0
    out.capacity = 1024
    out.data = <char*>PyMem_Malloc(out.capacity)
    if out.data == NULL:
        raise MemoryError()
    try:
        try:
            outcome = _write(program, record, &out, 0)
        except (ValueError, TypeError, OverflowError, KeyError, IndexError):
            return None  # e.g. UnicodeEncodeError: fastavro raises its own error on the same record
        if outcome != DONE:
            return None
        return PyBytes_FromStringAndSize(out.data, out.size)
    finally:
        PyMem_Free(out.data)
