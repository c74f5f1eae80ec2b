namespace Patterns.Gateway;

/// <summary>What an aggregate answers when one of its legs fails or times out.</summary>
public enum LegFailurePolicy
{
    /// <summary>The whole request fails: 502 (504 for a timeout) as problem details naming the leg.</summary>
    Fail,

    /// <summary>The leg is left out; the answer is marked partial (<c>"partial": true</c>, the leg under <c>"failed"</c>, header <c>X-Partial</c>).</summary>
    Omit,
}

/// <summary>Options of one leg of an aggregate.</summary>
public sealed class AggregateLegOptions
{
    /// <summary>Gets or sets how long the leg may take.</summary>
    /// <value>The default is 5 seconds.</value>
    public TimeSpan Timeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Gets or sets what a failure of this leg does to the answer.</summary>
    /// <value>The default is <see cref="LegFailurePolicy.Fail"/>.</value>
    public LegFailurePolicy OnFailure { get; set; } = LegFailurePolicy.Fail;

    /// <summary>Gets or sets the leg's HTTP method; null uses the incoming request's.</summary>
    /// <value>The default is null.</value>
    public string? Method { get; set; }

    /// <summary>Gets or sets whether the incoming request's body is sent on this leg (for POST aggregates).</summary>
    /// <value>The default is false.</value>
    public bool ForwardBody { get; set; }
}

/// <summary>Describes an aggregate route: its legs, fanned out in parallel, and the headers passed on to them.</summary>
public sealed class AggregateBuilder
{
    internal List<AggregateLeg> Legs { get; } = [];

    internal HashSet<string> Headers { get; } = new(StringComparer.OrdinalIgnoreCase) { "Authorization", "Accept-Language", "traceparent", "tracestate" };

    internal long MaxBodyBytes { get; private set; } = 1024 * 1024;

    /// <summary>Adds a leg whose answer becomes the property <paramref name="name"/> of the merged JSON object.</summary>
    /// <param name="name">The property name.</param>
    /// <param name="target">A YARP cluster id (a destination is chosen by the cluster's weights and health) or an absolute <c>http(s)://</c> base address.</param>
    /// <param name="path">The path on the target; <c>{name}</c> placeholders take the incoming route values; the query string is passed on.</param>
    /// <param name="configure">Timeout, failure policy, method and body.</param>
    /// <returns>This builder.</returns>
    public AggregateBuilder Leg(string name, string target, string path, Action<AggregateLegOptions>? configure = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentException.ThrowIfNullOrEmpty(target);
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (Legs.Exists(l => l.Name == name))
        {
            throw new ArgumentException($"The aggregate already has a leg named '{name}'.", nameof(name));
        }

        var options = new AggregateLegOptions();
        configure?.Invoke(options);
        if (options.Timeout <= TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(nameof(configure), options.Timeout, $"The timeout of leg '{name}' must be positive.");
        }

        Legs.Add(new AggregateLeg(name, target, path, options));
        return this;
    }

    /// <summary>Adds request headers passed on to every leg (besides Authorization, Accept-Language and the trace context).</summary>
    /// <param name="names">Header names.</param>
    /// <returns>This builder.</returns>
    public AggregateBuilder PropagateHeaders(params string[] names)
    {
        ArgumentNullException.ThrowIfNull(names);
        foreach (var name in names)
        {
            Headers.Add(name);
        }

        return this;
    }

    /// <summary>Sets the largest incoming body read for a POST aggregate; a larger one is answered 413.</summary>
    /// <param name="bytes">The limit.</param>
    /// <returns>This builder.</returns>
    public AggregateBuilder MaxBody(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(bytes, 1);
        MaxBodyBytes = bytes;
        return this;
    }
}

internal sealed record AggregateLeg(string Name, string Target, string Path, AggregateLegOptions Options);
