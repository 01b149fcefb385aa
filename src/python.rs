//! Python discovery and environments. (Being written; contract below.)
