namespace Patterns.Hosting;

/// <summary>Options shared by every pattern.</summary>
public sealed class PatternsOptions
{
    /// <summary>Gets or sets how long consumers may keep handling buffered and in-flight messages after the host starts stopping.</summary>
    /// <value>
    /// Default 30 seconds. The host's own shutdown timeout also bounds it. When it passes, handlers see their token
    /// cancelled; on the in-memory transport a handler that ignores cancellation is abandoned one second later (its
    /// message logged and counted as dropped), so shutdown cannot hang.
    /// </value>
    public TimeSpan ShutdownTimeout { get; set; } = TimeSpan.FromSeconds(30);
}
