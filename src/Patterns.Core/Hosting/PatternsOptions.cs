namespace Patterns.Hosting;

/// <summary>Options shared by every pattern.</summary>
public sealed class PatternsOptions
{
    /// <summary>Gets or sets how long consumers may keep handling buffered and in-flight messages after the host starts stopping.</summary>
    /// <value>Default 30 seconds. The host's own shutdown timeout also bounds it.</value>
    public TimeSpan ShutdownTimeout { get; set; } = TimeSpan.FromSeconds(30);
}
