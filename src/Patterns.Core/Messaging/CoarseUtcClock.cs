namespace Patterns.Messaging;

/// <summary>
/// The system wall clock at millisecond-tick resolution, for envelope timestamps. Reading the precise clock
/// costs more than the rest of an in-process publish on some virtual machines; this one adds the cheap
/// monotonic tick count to a wall-clock reading that is refreshed every second.
/// </summary>
internal static class CoarseUtcClock
{
    private const long ResyncMilliseconds = 1000;

    private static Anchor s_anchor = new(Environment.TickCount64, DateTimeOffset.UtcNow);

    public static DateTimeOffset UtcNow
    {
        get
        {
            var ticks = Environment.TickCount64;
            var anchor = Volatile.Read(ref s_anchor);
            var elapsed = ticks - anchor.Ticks;
            if ((ulong)elapsed >= ResyncMilliseconds)
            {
                anchor = new Anchor(ticks, DateTimeOffset.UtcNow);
                Volatile.Write(ref s_anchor, anchor);
                return anchor.Utc;
            }

            return anchor.Utc.AddMilliseconds(elapsed);
        }
    }

    private sealed record Anchor(long Ticks, DateTimeOffset Utc);
}
