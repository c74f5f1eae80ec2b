namespace Patterns.Messaging;

/// <summary>
/// Gives a message type a stable logical name that is used for topics, routing and the
/// <see cref="Envelope.MessageType"/> header instead of its CLR type name.
/// </summary>
/// <param name="name">The logical name, for example <c>orders.placed</c>.</param>
[AttributeUsage(AttributeTargets.Class | AttributeTargets.Struct | AttributeTargets.Interface, Inherited = false)]
public sealed class MessageNameAttribute(string name) : Attribute
{
    /// <summary>Gets the logical name.</summary>
    public string Name { get; } = name;
}
