"""AxiomNet actors: pykka actors that own threads, sockets, the TUN device and the clock."""
