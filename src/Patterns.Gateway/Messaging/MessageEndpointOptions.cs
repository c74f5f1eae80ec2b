using System.ComponentModel.DataAnnotations;

namespace Patterns.Gateway;

/// <summary>Options of an HTTP endpoint that calls a request handler, publishes or sends.</summary>
public sealed class MessageEndpointOptions
{
    /// <summary>Gets or sets the largest request body accepted; a larger one is answered 413 before it is read.</summary>
    /// <value>The default is 1 MiB.</value>
    [Range(1, int.MaxValue)]
    public int MaxBodyBytes { get; set; } = 1024 * 1024;

    /// <summary>Gets or sets how long a request-response call waits for the handler; past it the answer is 504.</summary>
    /// <value>The default is null: the request client's <c>DefaultTimeout</c>.</value>
    public TimeSpan? Timeout { get; set; }
}
