// Mixed heads (LServe): each query head has its own kind, all in one launch. The kernel entry
// reads the kind of its CTA's head and runs the mainloop specialised to that kind's schedule
// (the kind is uniform across a CTA, so nothing diverges and no tile pays for a dispatch).
enum HeadKind { HEAD_DENSE = 0, HEAD_DENSE_CAUSAL = 1, HEAD_STREAMING = 2, HEAD_BLOCK_SPARSE = 3 };
