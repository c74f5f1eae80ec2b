namespace Patterns.Streaming;

/// <summary>The shape of a window.</summary>
public enum WindowKind
{
    /// <summary>Fixed-size windows that do not overlap: each element is in exactly one.</summary>
    Tumbling,

    /// <summary>Fixed-size windows that start every <see cref="WindowSpec.Slide"/>: each element is in size ÷ slide of them.</summary>
    Hopping,

    /// <summary>Per key, a window that stays open while elements keep arriving within <see cref="WindowSpec.Gap"/> of each other; sessions that come to overlap merge.</summary>
    Session,
}

/// <summary>Describes windows: tumbling, hopping (sliding) or session. Windows are aligned to the Unix epoch (UTC).</summary>
/// <remarks>
/// A window covers [start, end). On event time (after <see cref="DataStream{T}.WithEventTime"/>) it fires when the
/// watermark passes its end; on processing time, when the pipeline's clock does.
/// </remarks>
public sealed record WindowSpec
{
    private WindowSpec(WindowKind kind, TimeSpan size, TimeSpan slide, TimeSpan gap)
    {
        Kind = kind;
        Size = size;
        Slide = slide;
        Gap = gap;
    }

    /// <summary>Gets the kind of window.</summary>
    public WindowKind Kind { get; }

    /// <summary>Gets the length of a tumbling or hopping window.</summary>
    public TimeSpan Size { get; }

    /// <summary>Gets how far apart hopping windows start (equal to <see cref="Size"/> for tumbling windows).</summary>
    public TimeSpan Slide { get; }

    /// <summary>Gets the inactivity gap that closes a session.</summary>
    public TimeSpan Gap { get; }

    /// <summary>Tumbling windows of <paramref name="size"/>.</summary>
    /// <param name="size">The window length; positive.</param>
    /// <returns>The window description.</returns>
    public static WindowSpec Tumbling(TimeSpan size)
    {
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(size, TimeSpan.Zero);
        return new(WindowKind.Tumbling, size, size, TimeSpan.Zero);
    }

    /// <summary>Hopping (sliding) windows of <paramref name="size"/> starting every <paramref name="slide"/>.</summary>
    /// <param name="size">The window length; positive.</param>
    /// <param name="slide">The distance between window starts; positive and at most <paramref name="size"/>.</param>
    /// <returns>The window description.</returns>
    public static WindowSpec Hopping(TimeSpan size, TimeSpan slide)
    {
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(size, TimeSpan.Zero);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(slide, TimeSpan.Zero);
        if (slide > size)
        {
            throw new ArgumentOutOfRangeException(nameof(slide), slide, $"The slide ({slide}) must not exceed the window size ({size}), or some elements would be in no window.");
        }

        return new(slide == size ? WindowKind.Tumbling : WindowKind.Hopping, size, slide, TimeSpan.Zero);
    }

    /// <summary>Session windows that close after <paramref name="gap"/> without an element of their key.</summary>
    /// <param name="gap">The inactivity gap; positive.</param>
    /// <returns>The window description.</returns>
    public static WindowSpec Session(TimeSpan gap)
    {
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(gap, TimeSpan.Zero);
        return new(WindowKind.Session, TimeSpan.Zero, TimeSpan.Zero, gap);
    }
}

/// <summary>The aggregate of one key in one window.</summary>
/// <typeparam name="TKey">The key type.</typeparam>
/// <typeparam name="TValue">The aggregate type.</typeparam>
/// <param name="Key">The key.</param>
/// <param name="Start">The window's start (inclusive).</param>
/// <param name="End">The window's end (exclusive).</param>
/// <param name="Value">The aggregate.</param>
/// <param name="IsUpdate"><see langword="true"/> when the window had fired before and a late (but allowed) element changed it; the value replaces the earlier one.</param>
public readonly record struct WindowResult<TKey, TValue>(TKey Key, DateTimeOffset Start, DateTimeOffset End, TValue Value, bool IsUpdate);

/// <summary>An element that arrived after every window it belongs to had closed for good (its end plus the allowed lateness is behind the watermark).</summary>
/// <typeparam name="T">The element type.</typeparam>
/// <param name="Item">The element.</param>
/// <param name="Timestamp">Its event time.</param>
/// <param name="Watermark">The watermark when it arrived.</param>
public sealed record LateEvent<T>(T Item, DateTimeOffset Timestamp, DateTimeOffset Watermark);
