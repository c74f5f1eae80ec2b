using System.Diagnostics;
using Patterns.PeerLinks.Wire;

namespace Patterns.PeerLinks.Links;

/// <summary>
/// Where a control-stream probe spends its round trip, hop by hop (the control-stream benchmark's diagnostic mode).
/// Off unless the benchmark turns it on; then one probe at a time is traced, and pings of the same value only
/// (heartbeats are not). Both nodes must run in one process, since the marks are one process's timestamps.
/// </summary>
internal static class ControlTrace
{
    /// <summary>The hops: the probe queued, the link's control writer took the ping, its write completed, the peer's session read it, the session's writer took the pong, its write completed, the link read the pong.</summary>
    public static readonly string[] Hops = ["queued", "ping taken by writer", "ping written", "ping read by peer", "pong taken by writer", "pong written", "pong read"];

    private static long _current = long.MinValue;

    /// <summary>Gets or sets whether probes are traced.</summary>
    public static bool Enabled { get; set; }

    /// <summary>Gets the timestamps of the hops of the last traced probe (0 where a hop was not seen).</summary>
    public static long[] Marks { get; } = new long[Hops.Length];

    public static void Begin(long stamp)
    {
        Array.Clear(Marks);
        Marks[0] = stamp;
        Volatile.Write(ref _current, stamp);
    }

    public static void Mark(int hop, long stamp)
    {
        if (stamp == Volatile.Read(ref _current))
        {
            Marks[hop] = Stopwatch.GetTimestamp();
        }
    }

    /// <summary>The hop a ping or pong frame reached when a writer took it (1 or 4), or -1 for any other frame.</summary>
    public static int TakenHop(byte[] frame) =>
        frame.Length == FrameLimits.FrameHeaderBytes + sizeof(long) ? (FrameType)frame[0] switch { FrameType.Ping => 1, FrameType.Pong => 4, _ => -1 } : -1;

    public static long Stamp(byte[] frame) => Frames.ReadInt64(frame.AsSpan(FrameLimits.FrameHeaderBytes));
}
