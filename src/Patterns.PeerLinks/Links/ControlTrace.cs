using System.Diagnostics;
using Patterns.PeerLinks.Wire;

namespace Patterns.PeerLinks.Links;

/// <summary>
/// Where a control-stream probe spends its round trip, hop by hop (the control-stream benchmark's diagnostic mode).
/// Off unless the benchmark turns it on; then one probe at a time is traced, and pings of the same value only
/// (heartbeats are not). Both nodes must run in one process, since the marks are one process's timestamps.
/// </summary>
/// <remarks>
/// Off, each hook on the link's paths is one read of <see cref="Enabled"/>: no timestamp, no allocation. On, the marks
/// are written by the threads that see each hop. A writer's "written" mark is taken when its write's await resumes,
/// which can come after the peer has read the frame, and even after the probe completed: a probe's marks can then be
/// incomplete (0) when it completes, or a "written" mark later than the next hop's.
/// </remarks>
internal static class ControlTrace
{
    /// <summary>The hops: the probe queued, the link's control writer took the ping, its write completed, the peer's session read it, the session's writer took the pong, its write completed, the link read the pong.</summary>
    public static readonly string[] Hops = ["queued", "ping taken by writer", "ping written", "ping read by peer", "pong taken by writer", "pong written", "pong read"];

    private static readonly long[] Marks = new long[Hops.Length];
    private static long _current = long.MinValue;

    /// <summary>Gets or sets whether probes are traced.</summary>
    public static bool Enabled { get; set; }

    /// <summary>Starts tracing the probe whose ping carries <paramref name="stamp"/>; marks of an earlier probe are no longer taken.</summary>
    public static void Begin(long stamp)
    {
        Volatile.Write(ref _current, long.MinValue);
        for (var hop = 1; hop < Marks.Length; hop++)
        {
            Volatile.Write(ref Marks[hop], 0);
        }

        Volatile.Write(ref Marks[0], Stopwatch.GetTimestamp());
        Volatile.Write(ref _current, stamp);
    }

    /// <summary>Marks <paramref name="hop"/> now if <paramref name="stamp"/> is the traced probe's.</summary>
    public static void Mark(int hop, long stamp)
    {
        if (stamp == Volatile.Read(ref _current))
        {
            Volatile.Write(ref Marks[hop], Stopwatch.GetTimestamp());
        }
    }

    /// <summary>Marks the hop a writer reached by taking <paramref name="frame"/> if it is the traced probe's ping or pong.</summary>
    /// <returns>The hop marked (1 or 4), or -1 for any other frame.</returns>
    public static int Taken(byte[] frame, out long stamp)
    {
        stamp = 0;
        var hop = frame.Length == FrameLimits.FrameHeaderBytes + sizeof(long) ? (FrameType)frame[0] switch { FrameType.Ping => 1, FrameType.Pong => 4, _ => -1 } : -1;
        if (hop < 0)
        {
            return -1;
        }

        stamp = Frames.ReadInt64(frame.AsSpan(FrameLimits.FrameHeaderBytes));
        if (stamp != Volatile.Read(ref _current))
        {
            return -1;
        }

        Mark(hop, stamp);
        return hop;
    }

    /// <summary>Gets the timestamps (<see cref="Stopwatch"/>) of the hops of the last traced probe so far (0 where a hop was not seen).</summary>
    public static long[] Snapshot()
    {
        var marks = new long[Marks.Length];
        for (var hop = 0; hop < marks.Length; hop++)
        {
            marks[hop] = Volatile.Read(ref Marks[hop]);
        }

        return marks;
    }
}
