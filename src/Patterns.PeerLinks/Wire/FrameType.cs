namespace Patterns.PeerLinks.Wire;

/// <summary>The kinds of frame a link carries. Each frame is <c>[type:1][length:4][body]</c>, little-endian.</summary>
internal enum FrameType : byte
{
    /// <summary>Dialer to listener, first on the control stream: who I am and what I last received.</summary>
    Hello = 1,

    /// <summary>Listener to dialer: who I am, whether the session resumed, what I last received, my subscriptions.</summary>
    HelloAck = 2,

    /// <summary>Dialer to listener, every heartbeat interval.</summary>
    Ping = 3,

    /// <summary>Listener's answer to a ping.</summary>
    Pong = 4,

    /// <summary>Cumulative acknowledgement of the other side's sequenced frames.</summary>
    Ack = 5,

    /// <summary>Listener to dialer: its full list of subscriptions, with a version.</summary>
    Announce = 6,

    /// <summary>Dialer to listener: the announcement with this version is applied (and removed subscriptions drained).</summary>
    AnnounceAck = 7,

    /// <summary>Dialer to listener, on the bulk stream: (a chunk of) an envelope for one of the listener's subscriptions.</summary>
    Data = 8,

    /// <summary>Listener to dialer: how a delivered envelope was settled.</summary>
    Settlement = 9,

    /// <summary>
    /// Listener to dialer, protocol 2 and later: plain acknowledgements of many delivered envelopes in one sequenced
    /// frame (see <see cref="Frames.AckRunHead"/>).
    /// </summary>
    Settlements = 10,
}

/// <summary>
/// The link protocol's versions. The dialer names the highest it reads in its hello; the listener answers with the one
/// the session uses (the lower of the two), and sends nothing the dialer could not read. A peer of protocol 1 sends
/// no version (the field is absent, which both ends read as 1) and ignores the one it is sent.
/// </summary>
internal static class LinkProtocol
{
    /// <summary>Every settlement in its own <see cref="FrameType.Settlement"/> frame.</summary>
    public const int V1 = 1;

    /// <summary>Plain acknowledgements may share one <see cref="FrameType.Settlements"/> frame.</summary>
    public const int V2 = 2;

    /// <summary>The highest version this node reads.</summary>
    public const int Current = V2;
}

/// <summary>Sizes shared by both ends of a link.</summary>
internal static class FrameLimits
{
    public const int FrameHeaderBytes = 5;

    /// <summary>Sequenced frames carry <c>[seq:8][subscription:8][total:4][offset:4]</c> before their bytes.</summary>
    public const int SequencedHeaderBytes = 24;

    /// <summary>The most bytes of one message in one frame; bigger messages are split into chunks.</summary>
    public const int MaxChunkBytes = 32 * 1024;

    /// <summary>The largest encoded envelope header (everything but the payload); it must fit in the first chunk.</summary>
    public const int MaxEnvelopeHeaderBytes = 16 * 1024;

    /// <summary>The most acknowledgements one <see cref="FrameType.Settlements"/> frame carries (8 KiB of sequence numbers).</summary>
    public const int MaxAcksPerFrame = 1024;
}
