//! `ripcord fleet`: see and steer the breakers of a whole fleet through its store.
