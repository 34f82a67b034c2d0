# C types for the compiled build of redact.py (setup.py copies this beside it): the character scans only.
# Everything else compiles as the plain Python it is, so the two builds answer alike.
import cython

cdef bint _hex(Py_UCS4 char)
cdef bint _upper(Py_UCS4 char)
cdef bint _letter(Py_UCS4 char)
cdef bint _decimal(Py_UCS4 char)

@cython.locals(char=Py_UCS4)
cdef bint _groups_of_four(str text, Py_ssize_t at)
cdef Py_UCS4 _char(str text, Py_ssize_t index)

@cython.locals(pair=int, suffix=Py_UCS4, after=Py_UCS4)
cdef bint _nino_tail(str text, Py_ssize_t at)

@cython.locals(offset=Py_ssize_t, char=Py_UCS4)
cdef bint _fiscal_tail(str text, Py_ssize_t at)

@cython.locals(i=Py_ssize_t, char=Py_UCS4, after=Py_UCS4, dots=Py_ssize_t, colons=Py_ssize_t, dashes=Py_ssize_t,
               jwt=bint, key=bint, mac=bint, nino=bint, iban=bint, fiscal=bint, mask=long)
cpdef long _token_mask_scan(str text, bint has_digit)

@cython.locals(i=Py_ssize_t, char=Py_UCS4, after=Py_UCS4, previous=Py_UCS4, dots=Py_ssize_t, dashes=Py_ssize_t,
               slashes=Py_ssize_t, colons=Py_ssize_t, hex_run=Py_ssize_t, hexes=bint, date=bint, time=bint,
               decimal=bint, mask=long)
cpdef long _lookalike_mask_scan(str text)

@cython.locals(i=Py_ssize_t, start=Py_ssize_t, char=Py_UCS4, after=Py_UCS4, maybe_short=bint)
cpdef bint _long_run_scan(str text)

@cython.locals(start=Py_ssize_t, end=Py_ssize_t)
cpdef tuple _key_tail_scan(str text, Py_ssize_t low, Py_ssize_t high)

@cython.locals(n=Py_ssize_t, i=Py_ssize_t, j=Py_ssize_t, last=Py_ssize_t, end=Py_ssize_t, char=Py_UCS4, after=Py_UCS4)
cpdef list _digit_runs_scan(str text)

cdef bint _ascii_word(Py_UCS4 char)

@cython.locals(low=Py_ssize_t, end=Py_ssize_t, start=Py_ssize_t, char=Py_UCS4)
cpdef bint _phone_named(str text, Py_ssize_t at)

@cython.locals(n=Py_ssize_t, i=Py_ssize_t, j=Py_ssize_t, m=Py_ssize_t, before=Py_UCS4, after=Py_UCS4)
cpdef list _decimal_phones_scan(str text)

@cython.locals(i=Py_ssize_t, j=Py_ssize_t, a=Py_UCS4, b=Py_UCS4)
cpdef bint _secret_colon_scan(str text)

@cython.locals(k=Py_ssize_t)
cdef bint _has(str text, Py_ssize_t at, str word)

@cython.locals(after=Py_UCS4)
cdef bint _scheme_at(str text, Py_ssize_t at, Py_UCS4 char)

@cython.locals(i=Py_ssize_t, char=Py_UCS4, after=Py_UCS4, params=bint, colon=bint, auth=bint, scheme=bint, digest=bint,
               hints=long)
cpdef long _secret_hints_scan(str text)

@cython.locals(char=Py_UCS4)
cpdef bint _any_digit(str text)

@cython.locals(char=Py_UCS4)
cpdef bint _any_decimal(str text)

cdef bint _word(Py_UCS4 char)

@cython.locals(char=Py_UCS4)
cdef bint _id_run_end(str text, Py_ssize_t at)

@cython.locals(n=Py_ssize_t, i=Py_ssize_t, j=Py_ssize_t, k=Py_ssize_t, end=Py_ssize_t, char=Py_UCS4, before=Py_UCS4,
               sign=Py_UCS4, check=Py_UCS4)
cpdef list _id_runs_scan(str text)

@cython.locals(low=Py_ssize_t, end=Py_ssize_t, start=Py_ssize_t)
cpdef str _name_before(str text, Py_ssize_t at)
